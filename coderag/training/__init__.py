"""Training the encoder: synthetic pairs, hard negatives, held-out split, fine-tuning and its artifacts."""
