"""Classification on Lightning: module (recipe hooks), datamodule, training entry point and evaluation."""
