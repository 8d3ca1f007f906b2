"""Lab 2: text. A character-level GPT (corpus, model, training, generation), GPT-2 tokenization and Hugging Face
generation, and sentence classification with a pretrained encoder (frozen features, fine-tuning, LoRA)."""
