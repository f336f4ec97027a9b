"""The Gradio user interface (handlers stay thin; figures live in hierloc.viz)."""
