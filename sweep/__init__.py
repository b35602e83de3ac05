"""otsr-sweep: Ray Tune + Optuna + MLflow sweeps of the otsr trainers (the core never imports this)."""
