"""CTC Viterbi alignment, its store (``asr-zoo align``) and the Imputer roll-in."""
