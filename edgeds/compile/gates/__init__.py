"""Quality gates, one per task: a compiled candidate judged against the FP32 reference.

:mod:`.image` holds the image-classification gate (top-1 drop and agreement, cosine, max abs error).
"""
