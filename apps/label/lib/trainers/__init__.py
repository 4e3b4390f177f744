from lib.trainers.radiograph import RadiographTrainTask, predicted_mask, validation_score

__all__ = ["RadiographTrainTask", "predicted_mask", "validation_score"]
