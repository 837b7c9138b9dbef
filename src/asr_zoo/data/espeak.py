"""A minimal ctypes binding to libespeak-ng: text in, float32 waveform out.

The library and its voice data come from the PyPI wheel ``espeakng-loader``; no system
espeak-ng is needed. Synthesis is synchronous (``AUDIO_OUTPUT_SYNCHRONOUS``): ``espeak_Synth``
returns only after our callback has received every sample, so a call is a plain function.

libespeak-ng keeps one global synthesiser per process. This module therefore initialises it
once per process, lazily, on the first :func:`synthesize` call; worker processes of a pool
each get their own. Calls are not thread-safe (a lock serialises them).

Voices are named as espeak-ng names them: a language or dialect (``en-us``, ``en-gb-scotland``)
optionally followed by a variant (``en-us+m3``, ``en-gb+f2``).

>>> audio = synthesize("hello world", voice="en-us+m3")   # doctest: +SKIP
>>> audio.dtype, audio.ndim, SAMPLE_RATE                  # doctest: +SKIP
(dtype('float32'), 1, 22050)
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Optional

import numpy as np

__all__ = ["SAMPLE_RATE", "EspeakError", "synthesize", "sample_rate"]

SAMPLE_RATE = 22050
"""Sample rate (Hz) of libespeak-ng's output; :func:`sample_rate` returns the value it reports."""

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() when data is missing
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 2, 3, 4, 7

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded, rejected a setting, or produced no audio."""


class _Engine:
    """The process's libespeak-ng synthesiser (one per process, see the module docstring)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise EspeakError(
                "the PyPI package 'espeakng-loader' (libespeak-ng + voice data) is not installed; "
                "install it with `pip install espeakng-loader`"
            ) from e
        lib_path = espeakng_loader.get_library_path()
        try:
            self.lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise EspeakError(f"cannot load libespeak-ng from {lib_path}: {e}") from e
        self._declare_signatures()
        data_path = espeakng_loader.get_data_path().encode()
        rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data {data_path!r}")
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        # Keep a reference: the C library calls this object for as long as the process lives.
        self._callback = _SynthCallback(self._on_audio)
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _declare_signatures(self) -> None:
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int

    def _on_audio(self, wav, num_samples: int, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = continue synthesis

    def _check(self, code: int, what: str) -> None:
        if code != _EE_OK:
            raise EspeakError(f"{what} failed with espeak error code {code}")

    def synthesize(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, word_gap: int
    ) -> np.ndarray:
        """Synthesise in this process; the result depends on earlier calls (see module doc)."""
        with self.lock:
            self._check(self.lib.espeak_SetVoiceByName(voice.encode()), f"voice {voice!r}")
            # Set every parameter on every call so that no setting leaks between utterances.
            for param, value in [
                (_PARAM_RATE, rate), (_PARAM_VOLUME, 100), (_PARAM_PITCH, pitch),
                (_PARAM_RANGE, pitch_range), (_PARAM_WORDGAP, word_gap),
            ]:
                self._check(self.lib.espeak_SetParameter(param, value, 0), f"parameter {param}")
            data = text.encode("utf-8") + b"\0"
            self._chunks = []
            code = self.lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self._check(code, f"espeak_Synth({text!r})")
            self._check(self.lib.espeak_Synchronize(), "espeak_Synchronize")
            chunks, self._chunks = self._chunks, []
        if not chunks:
            raise EspeakError(f"espeak-ng produced no audio for {text!r} (voice {voice!r})")
        return np.concatenate(chunks)

    def synthesize_in_child(self, *args) -> np.ndarray:
        """Synthesise in a forked child, so the result depends only on the arguments.

        The child inherits this process's engine as it was right after initialisation (this
        process never synthesises in fresh mode), speaks, sends the int16 samples (or an error
        message) through a pipe and exits.
        """
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into the caller's code
            status = 0
            try:
                os.close(read_fd)
                try:
                    payload = b"A" + self.synthesize(*args).tobytes()
                except Exception as e:  # reported to the parent, which raises it
                    payload = b"E" + str(e).encode("utf-8", "replace")
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(payload)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            payload = pipe.read()  # read before waiting: the child blocks on a full pipe
        _, status = os.waitpid(pid, 0)
        if status != 0 or not payload:
            raise EspeakError(f"espeak-ng child process failed (wait status {status}) on {args[0]!r}")
        if payload[:1] == b"E":
            raise EspeakError(payload[1:].decode("utf-8"))
        return np.frombuffer(payload, dtype=np.int16, offset=1)


_CAN_FORK = hasattr(os, "fork")
_engine: Optional[_Engine] = None
_engine_lock = threading.Lock()


def _get_engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def sample_rate() -> int:
    """Sample rate (Hz) that libespeak-ng reports; initialises the library if needed."""
    return _get_engine().sample_rate


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    word_gap: int = 0,
) -> np.ndarray:
    """Speak ``text`` with libespeak-ng and return the waveform.

    Args:
        text (str): what to say; plain text (no SSML). Pass lower-case words: espeak-ng may
            spell out short all-capital words as abbreviations.
        voice (str): espeak-ng voice name, optionally with a variant: ``"en-us+m3"``.
        rate (int): speaking rate in words per minute (espeak-ng accepts 80-450).
        pitch (int): base pitch, 0-100 (50 = the voice's default).
        pitch_range (int): pitch variation (intonation), 0-100 (0 = monotone, 50 = default).
        word_gap (int): extra pause between words, in units of 10 ms at the default rate.

    Returns:
        audio (ndarray): shape `(N,)`, float32 in [-1, 1), at :func:`sample_rate` Hz
        (22050 for libespeak-ng).

    Raises:
        EspeakError: the library cannot be loaded or initialised, the voice is unknown, a
            parameter is rejected, or synthesis produced no (or only silent) audio.
    """
    engine = _get_engine()
    args = (text, voice, rate, pitch, pitch_range, word_gap)
    samples = engine.synthesize_in_child(*args) if _CAN_FORK else engine.synthesize(*args)
    if not np.any(samples):
        raise EspeakError(f"espeak-ng produced only silence for {text!r} (voice {voice!r})")
    return samples.astype(np.float32) / 32768.0
