"""The names of the model's parts: the contract between building, feature caching and export.

`build_model` names its layers with these; every later stage finds the parts
by them (`model.get_layer(BASE)`), so a name changes in one place.
"""

INPUT = "image"  # the model's input: raw 0-255 pixels
AUGMENTATION = "augmentation"  # random layers, active only in training
TO_RGB = "to_rgb"  # grayscale input replicated for a base that needs RGB
PREPROCESS = "preprocess"  # the base family's preprocess_input, as built-in layers
BASE = "base"  # the nested base model: the part that transfers
POOL = "head_pool"  # the head's pooling: where a frozen base's features are taken
DROPOUT = "head_dropout"  # dropout before the output layer
OUTPUT = "predictions"  # the output layer (float32, softmax or sigmoid)
