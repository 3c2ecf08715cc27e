"""Speech for the corpus: seeded voices and generated sentences, spoken by espeak-ng (a built-in
formant synthesiser only when espeak-ng is missing, with a loud warning), placed in a clip.

Audio out is mono float32 at SAMPLE_RATE.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import warnings
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from rich.console import Console
from scipy.signal import lfilter, resample_poly

SAMPLE_RATE = 16000
WORDS_PER_SECOND = 1.7   # what espeak-ng speaks at ~155 wpm, pauses included (measured)

# (espeak-ng language, weight): English-heavy, then Latin-script languages espeak reads well
LANGUAGES = (("en-us", 5), ("en-gb", 3), ("en-gb-scotland", 1), ("en-029", 1), ("en-gb-x-rp", 1),
             ("fr-fr", 1), ("de", 1), ("es", 1), ("es-419", 1), ("it", 1), ("pt-br", 1), ("nl", 1),
             ("pl", 1), ("sv", 1), ("fi", 1), ("cs", 1), ("ro", 1), ("id", 1), ("sw", 1), ("tr", 1))
# espeak-ng voice variants that sound like people (no robots, whispers or effects)
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Alex", "Alicia",
            "Andrea", "Andy", "Annie", "adam", "belinda", "benjamin", "david", "edward", "john", "linda",
            "max", "michel", "paul", "robert", "steph", "anika", "quincy", "rob", "Michael", "Mike")

_DETERMINERS = ("the", "a", "my", "your", "our", "this", "that", "every", "one")
_ADJECTIVES = ("quiet", "bright", "small", "heavy", "golden", "careful", "sudden", "patient", "old",
               "purple", "silver", "gentle", "restless", "narrow", "cheerful", "distant", "wooden", "clever")
_NOUNS = ("engineer", "river", "window", "lantern", "garden", "teacher", "market", "bicycle", "letter",
          "mountain", "kitchen", "violin", "harbour", "pilot", "station", "painter", "island", "notebook",
          "doctor", "village", "camera", "neighbour", "bridge", "orchestra", "library", "rabbit")
_VERBS = ("found", "painted", "carried", "opened", "watched", "remembered", "followed", "repaired",
          "borrowed", "described", "noticed", "answered", "visited", "measured", "collected", "forgot")
_VERBS_BASE = ("find", "paint", "carry", "open", "watch", "remember", "follow", "repair", "borrow",
               "describe", "notice", "answer", "visit", "measure", "collect", "forget")
_ADVERBS = ("slowly", "today", "again", "yesterday", "quickly", "at last", "every morning", "once more",
            "tonight", "without a word", "before noon", "by accident")
_PLACES = ("near the station", "in the garden", "behind the market", "across the river",
           "under the bridge", "at the harbour", "on the hill", "inside the library", "by the window")
_NUMBERS = ("two", "three", "seven", "eleven", "twenty", "forty", "a hundred", "a dozen")
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh", "br", "tr",
           "pl", "st", "gr", "kl", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ee", "oa")
_CODAS = ("", "", "", "n", "m", "s", "r", "l", "t", "k")


@dataclass(frozen=True)
class Voice:
    voice_id: str
    language: str      # espeak-ng language
    variant: str       # espeak-ng voice variant
    pitch: int         # espeak-ng -p, 0..99
    rate: int          # words per minute (a clip jitters it by up to 8%)
    word_gap: int      # extra gap between words, 10 ms units

    @staticmethod
    def sample(rng: np.random.Generator, voice_id: str) -> "Voice":
        langs, weights = zip(*LANGUAGES)
        p = np.asarray(weights, np.float64) / sum(weights)
        return Voice(voice_id, str(rng.choice(langs, p=p)), str(rng.choice(VARIANTS)),
                     int(rng.integers(25, 76)), int(rng.integers(125, 186)), int(rng.choice([0, 0, 1, 2, 3])))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sentence:
    sentence_id: str
    kind: str                    # "english" (templates) or "pseudo" (made-up words)
    phrases: tuple[str, ...]
    pauses_ms: tuple[int, ...]   # silence after each phrase but the last
    emphasis: tuple[int, ...]    # indices of phrases spoken with raised pitch

    @property
    def text(self) -> str:
        return " / ".join(self.phrases)

    @staticmethod
    def sample(rng: np.random.Generator, sentence_id: str, seconds: float) -> "Sentence":
        """A sentence that fills about `seconds` at a middling rate, in phrases separated by pauses."""
        kind = "english" if rng.uniform() < 0.65 else "pseudo"
        words = max(2, int(round(seconds * WORDS_PER_SECOND * rng.uniform(0.8, 1.1))))
        phrases: list[str] = []
        total = 0
        while total < words:
            phrase = _english_phrase(rng) if kind == "english" else _pseudo_phrase(rng)
            phrase = " ".join(phrase.split()[: words - total])
            phrases.append(phrase)
            total += len(phrase.split())
        pauses = tuple(int(rng.choice([150, 250, 350, 500, 700])) for _ in phrases[:-1])
        count = min(len(phrases), int(rng.integers(0, 3)))
        emphasis = tuple(sorted(int(k) for k in rng.choice(len(phrases), size=count, replace=False)))
        return Sentence(sentence_id, kind, tuple(phrases), pauses, emphasis)

    def to_json(self) -> dict:
        return {"sentence_id": self.sentence_id, "kind": self.kind, "text": self.text,
                "phrases": list(self.phrases), "pauses_ms": list(self.pauses_ms), "emphasis": list(self.emphasis)}

    def ssml(self) -> str:
        parts = []
        for k, phrase in enumerate(self.phrases):
            parts.append(f'<prosody pitch="+45%">{phrase}</prosody>' if k in self.emphasis else phrase)
            if k < len(self.pauses_ms):
                parts.append(f'<break time="{self.pauses_ms[k]}ms"/>')
        return "<speak>" + " ".join(parts) + "</speak>"


def _english_phrase(rng: np.random.Generator) -> str:
    c = lambda seq: str(rng.choice(seq))  # noqa: E731
    pattern = int(rng.integers(0, 5))
    if pattern == 0:
        return f"{c(_DETERMINERS)} {c(_ADJECTIVES)} {c(_NOUNS)} {c(_VERBS)} {c(_NUMBERS)} {c(_NOUNS)}s"
    if pattern == 1:
        return f"{c(_DETERMINERS)} {c(_NOUNS)} {c(_VERBS)} {c(_DETERMINERS)} {c(_NOUNS)} {c(_PLACES)}"
    if pattern == 2:
        return f"{c(_ADVERBS)} {c(_DETERMINERS)} {c(_ADJECTIVES)} {c(_NOUNS)} {c(_VERBS)} it"
    if pattern == 3:
        return f"did {c(_DETERMINERS)} {c(_NOUNS)} really {c(_VERBS_BASE)} it {c(_PLACES)}?"
    return f"{c(_PLACES)} we {c(_VERBS)} {c(_DETERMINERS)} {c(_ADJECTIVES)} {c(_NOUNS)}"


def _pseudo_phrase(rng: np.random.Generator) -> str:
    words = []
    for _ in range(int(rng.integers(2, 6))):
        syllables = int(rng.choice([1, 2, 2, 3]))
        words.append("".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS))
                             for _ in range(syllables)))
    return " ".join(words)


@lru_cache(maxsize=1)
def espeak_version() -> str | None:
    """'espeak-ng 1.51' style version string, or None when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    words = out.split()
    return "espeak-ng " + (words[words.index("text-to-speech:") + 1] if "text-to-speech:" in words else "unknown")


_warned = False


def warn_if_fallback() -> None:
    """Says loudly (a RuntimeWarning and a red line on stderr, once per process) when speech will come
    from the fallback synthesiser."""
    global _warned
    if _warned or espeak_version() is not None:
        return
    _warned = True
    message = ("espeak-ng not found: speech comes from the built-in fallback synthesiser (buzzy vowels, "
               "no real language). Install espeak-ng (apt-get install espeak-ng) for real speech.")
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    Console(stderr=True).print(f"[bold red]WARNING: {message}[/]")


def speech_engine() -> str:
    """What `synthesize` uses here: an espeak-ng version string, or 'fallback'."""
    return espeak_version() or "fallback"


def synthesize(sentence: Sentence, voice: Voice, rate: int, seed: int) -> np.ndarray:
    """Speak `sentence` with `voice` at `rate` words per minute -> float32 mono at SAMPLE_RATE."""
    if espeak_version() is not None:
        return _espeak(sentence, voice, rate)
    warn_if_fallback()
    return _fallback(sentence, voice, rate, seed)


def _espeak(sentence: Sentence, voice: Voice, rate: int) -> np.ndarray:
    cmd = ["espeak-ng", "-v", f"{voice.language}+{voice.variant}", "-s", str(rate), "-p", str(voice.pitch),
           "-g", str(voice.word_gap), "-m", "--stdout", sentence.ssml()]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    # espeak-ng streams a WAV whose size fields are placeholders: read the format, take all data
    fmt = wav.index(b"fmt ")
    channels = int.from_bytes(wav[fmt + 10:fmt + 12], "little")
    rate_hz = int.from_bytes(wav[fmt + 12:fmt + 16], "little")
    data = wav.index(b"data") + 8
    pcm = np.frombuffer(wav[data:len(wav) - (len(wav) - data) % 2], dtype="<i2").astype(np.float32) / 32768.0
    if channels != 1:
        pcm = pcm.reshape(-1, channels).mean(1)
    g = np.gcd(SAMPLE_RATE, rate_hz)
    return resample_poly(pcm, SAMPLE_RATE // g, rate_hz // g).astype(np.float32)


# formants (F1, F2, F3) of the fallback's vowels, Hz
_FORMANTS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "o": (570, 840, 2410),
             "u": (300, 870, 2240), "y": (400, 1600, 2500)}


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * freq / SAMPLE_RATE
    return lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)


def _fallback(sentence: Sentence, voice: Voice, rate: int, seed: int) -> np.ndarray:
    """A small formant synthesiser: each vowel group a voiced, formant-filtered pulse train, each
    consonant a noise burst; pauses as in the sentence. Only used without espeak-ng."""
    rng = np.random.default_rng([seed, zlib.crc32(sentence.text.encode())])
    f0_base = 85 + 1.6 * voice.pitch * (1.6 if voice.variant.startswith("f") else 1.0)
    syllable_s = 60.0 / rate / 1.6
    out: list[np.ndarray] = []
    for k, phrase in enumerate(sentence.phrases):
        words = phrase.replace("?", "").split()
        for w, word in enumerate(words):
            groups, current = [], ""
            for ch in word.lower():
                if ch in _FORMANTS:
                    current += ch
                else:
                    if current:
                        groups.append(current)
                        current = ""
                    groups.append("-")
            if current:
                groups.append(current)
            for g in groups:
                if g == "-":
                    n = int(rng.uniform(0.03, 0.06) * SAMPLE_RATE)
                    burst = _resonator(rng.normal(size=n), rng.uniform(2000, 5000), 1500) * 0.15
                    out.append((burst * np.hanning(n)).astype(np.float32))
                    continue
                n = int(syllable_s * rng.uniform(0.7, 1.2) * SAMPLE_RATE)
                t = np.arange(n) / SAMPLE_RATE
                stress = 1.3 if k in sentence.emphasis else 1.0
                vibrato = 1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t)
                f0 = f0_base * stress * vibrato * (1 - 0.1 * w / len(words))
                phase = np.cumsum(f0 / SAMPLE_RATE)
                pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
                f1, f2, f3 = _FORMANTS[g[0]]
                v = _resonator(pulses, f1, 90) + 0.6 * _resonator(pulses, f2, 110) + 0.3 * _resonator(pulses, f3, 160)
                env = np.minimum(1, np.minimum(t / 0.02, (t[-1] - t) / 0.03 + 1e-3))
                out.append((v * env * 0.3).astype(np.float32))
            out.append(np.zeros(int(0.04 * SAMPLE_RATE), np.float32))
        if k < len(sentence.pauses_ms):
            out.append(np.zeros(int(sentence.pauses_ms[k] * SAMPLE_RATE / 1000), np.float32))
    wave = np.concatenate(out)
    return (wave / max(1e-6, float(np.abs(wave).max())) * 0.7).astype(np.float32)


def place_in_clip(speech: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """The clip's audio, exactly `num_samples` long: a short silent lead-in, the speech (cut at its
    last pause before the end if too long), silence to the end, a random gain and a faint noise
    floor (-70..-55 dBFS)."""
    lead = int(rng.uniform(0.15, 0.5) * SAMPLE_RATE)
    room = max(0, num_samples - lead - int(0.15 * SAMPLE_RATE))
    speech = _trim_silence(speech)
    if len(speech) > room:
        speech = _cut_at_pause(speech, room)
    wave = np.zeros(num_samples, np.float32)
    peak = float(np.abs(speech).max()) if len(speech) else 0.0
    if peak > 0:
        wave[lead:lead + len(speech)] = speech * (rng.uniform(0.3, 0.9) / peak)
    noise_db = rng.uniform(-70, -55)
    wave += (rng.normal(size=num_samples) * 10 ** (noise_db / 20)).astype(np.float32)
    return wave


def _trim_silence(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold)
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


def _cut_at_pause(x: np.ndarray, limit: int) -> np.ndarray:
    """x cut to at most `limit` samples, at the start of the last quiet 40 ms before it (else a hard
    cut), faded out over 10 ms."""
    hop = int(0.01 * SAMPLE_RATE)
    frames = x[: limit // hop * hop].reshape(-1, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    quiet = rms < 0.03 * (rms.max() + 1e-12)
    run = np.convolve(quiet.astype(int), np.ones(4, int), mode="valid") == 4   # 4 quiet hops in a row
    starts = np.flatnonzero(run)
    cut = int(starts[-1]) * hop if len(starts) and starts[-1] * hop > limit // 3 else limit
    y = x[:cut].copy()
    fade = min(len(y), hop)
    y[len(y) - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return y


def wav_bytes(wave: np.ndarray) -> bytes:
    """A mono 32-bit float WAV of `wave` at SAMPLE_RATE. Written by hand: libsndfile adds a PEAK chunk
    with a time stamp, which would make the bytes differ from run to run."""
    data = np.ascontiguousarray(wave, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, SAMPLE_RATE, SAMPLE_RATE * 4, 4, 32, 0)   # IEEE float, cbSize 0
    fact = struct.pack("<I", len(wave))
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
            + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", len(body)) + body
