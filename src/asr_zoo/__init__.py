"""asr-zoo: five ASR objectives x five attention types on one datamodule and one encoder zoo."""

__version__ = "0.1.0"
