"""Release steps, run as `emo-rt ship`, `emo-rt model-card` and `emo-rt train-evaluator`: package a
trained model as the shipped default, write its card from measurements, train the face evaluator."""
