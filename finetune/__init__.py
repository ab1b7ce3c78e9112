"""finetune: SFT/DPO on the trainable roles from the store, into the next checkpoint folder."""
