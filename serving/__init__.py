"""KServe shells around the CodeRAG core: retriever, generator and the question -> SQL endpoint."""
