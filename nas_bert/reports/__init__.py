"""What runs report: the study and quantization reports, the fine-tuning summary, the search's plots and tables,
and the model cards."""
