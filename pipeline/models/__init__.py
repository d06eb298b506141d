"""The models: the target (local transformers or any OpenAI-compatible server; kvcache and
fastlora serve it), the instructor client, embeddings, the saved model settings, the local
llama.cpp server. Imports core, storage and problems."""
