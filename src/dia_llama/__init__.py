"""dia-llama: Hugging Face-native Dia-LLaMA for 3D chest CT report generation."""

__version__ = "0.1.0"
