"""What a run leaves behind: the model file, artefacts, plots and the report page."""
