"""The pipeline's stages as plain functions, the main job, and the local run directory logic (no KFP here)."""
