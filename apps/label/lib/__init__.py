"""pneumonitor's MONAI Label app: infer tasks, trainers, active-learning strategies and datastores."""
