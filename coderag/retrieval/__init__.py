"""The bi-encoder, the FAISS schema index, and question -> top-k schema search."""
