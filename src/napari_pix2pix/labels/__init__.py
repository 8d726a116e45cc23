"""What labels mean: the annotation kinds a model learns from (``encodings``), the output kinds it
predicts (``outputs``) and the post-processing of its class maps into labels and instances
(``postprocess``)."""
