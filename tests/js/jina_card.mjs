// The jina-clip-v2 card's transformers.js example (texts + images, then a text-only query) on a local repo.
// Usage: node jina_card.mjs '{"root": ..., "model": ..., "dtype": "fp32", "urls": [...], "sentences": [...], "query": ...}'
// Prints one JSON line with the inputs the processor built and the embeddings the model returned.
import { AutoModel, AutoProcessor, RawImage, env } from "@huggingface/transformers";

const args = JSON.parse(process.argv[2]);
env.allowRemoteModels = false;
env.localModelPath = args.root;

const processor = await AutoProcessor.from_pretrained(args.model);
const model = await AutoModel.from_pretrained(args.model, { dtype: args.dtype });

const images = await Promise.all(args.urls.map((url) => RawImage.read(url)));
const inputs = await processor(args.sentences, images, { padding: true, truncation: true });
const { l2norm_text_embeddings, l2norm_image_embeddings } = await model(inputs);

const query_inputs = await processor(args.query);
const { l2norm_text_embeddings: query_embeddings } = await model(query_inputs);

const rows = (tensor) => tensor.tolist();
// Token ids come back as BigInt.
const plain = (key, value) => (typeof value === "bigint" ? Number(value) : value);
console.log(
  JSON.stringify({
    processor: processor.constructor.name,
    input_ids: rows(inputs.input_ids),
    pixel_values: rows(inputs.pixel_values),
    query_input_ids: rows(query_inputs.input_ids),
    l2norm_text_embeddings: rows(l2norm_text_embeddings),
    l2norm_image_embeddings: rows(l2norm_image_embeddings),
    query_embeddings: rows(query_embeddings),
  }, plain),
);
