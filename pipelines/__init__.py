"""The CodeRAG Kubeflow pipeline definition and its compiled YAML."""
