"""Running a study: the run folder, the one site step, results and prediction."""
