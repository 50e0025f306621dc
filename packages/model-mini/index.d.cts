/** Absolute path of the bundle directory (manifest.json, tokenizers, ONNX graphs). */
export declare const bundlePath: string;
export declare const name: 'vikdf-mini';
declare const model: { bundlePath: string; name: 'vikdf-mini' };
export default model;
