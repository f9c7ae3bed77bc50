"""The network over encoded inputs: the core, its architectures and embeddings."""
