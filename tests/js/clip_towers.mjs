// transformers.js' CLIP text and vision classes on a local LongCLIP repo (onnx/text_model.onnx, onnx/vision_model.onnx).
// Usage: node clip_towers.mjs '{"root": ..., "model": ..., "dtype": "fp32", "texts": [...], "urls": [...]}'
// Prints one JSON line with the token ids, pixel values and embeddings.
import {
  AutoProcessor,
  AutoTokenizer,
  CLIPTextModelWithProjection,
  CLIPVisionModelWithProjection,
  RawImage,
  env,
} from "@huggingface/transformers";

const args = JSON.parse(process.argv[2]);
env.allowRemoteModels = false;
env.localModelPath = args.root;

const tokenizer = await AutoTokenizer.from_pretrained(args.model);
const text_model = await CLIPTextModelWithProjection.from_pretrained(args.model, { dtype: args.dtype });
const text_inputs = tokenizer(args.texts, { padding: true, truncation: true });
const { text_embeds } = await text_model(text_inputs);

const processor = await AutoProcessor.from_pretrained(args.model);
const vision_model = await CLIPVisionModelWithProjection.from_pretrained(args.model, { dtype: args.dtype });
const images = await Promise.all(args.urls.map((url) => RawImage.read(url)));
const image_inputs = await processor(images);
const { image_embeds } = await vision_model(image_inputs);

// Token ids come back as BigInt.
const plain = (key, value) => (typeof value === "bigint" ? Number(value) : value);
console.log(
  JSON.stringify(
    {
      input_ids: text_inputs.input_ids.tolist(),
      attention_mask: text_inputs.attention_mask.tolist(),
      pixel_values: image_inputs.pixel_values.tolist(),
      text_embeds: text_embeds.tolist(),
      image_embeds: image_embeds.tolist(),
    },
    plain,
  ),
);
