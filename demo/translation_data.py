"""A small English->Chinese parallel corpus, generated in code, with a known word alignment.

Sentences come from one template with optional parts, over subjects, verbs, numbers, sizes,
colours, objects, times and places. The Chinese side is tokenised into whole words and reorders
what English puts at the end (time and place move before the verb; size moves after the colour),
so a model that aligns has to learn more than the diagonal:

    i see three big red cars today  ->  我 今天 看见 三 辆 红色 的 大 汽车

Every Chinese token carries the index of the English word it translates, or `None` for function
words that have no English counterpart (measure words such as 辆, the particle 的, 在, 吗).

Example:

```python
corpus = make_corpus(train_size=3000, heldout_size=200, seed=0)
pair = corpus.heldout[0]
for zh, src in zip(pair.target, pair.alignment):
    print(zh, "->", None if src is None else pair.source[src])
```
"""

import dataclasses
import random

PAD = "<pad>"
START = "<s>"
END = "</s>"
UNKNOWN = "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNKNOWN)  # PAD must stay id 0: the models mask on it

# (english, english after he/she, chinese)
SUBJECTS = [
    ("i", "我"),
    ("you", "你"),
    ("he", "他"),
    ("she", "她"),
    ("we", "我们"),
    ("they", "他们"),
]
THIRD_PERSON = {"he", "she"}
VERBS = [
    ("see", "sees", "看见"),
    ("buy", "buys", "买"),
    ("want", "wants", "想要"),
    ("have", "has", "有"),
    ("like", "likes", "喜欢"),
    ("draw", "draws", "画"),
    ("sell", "sells", "卖"),
    ("find", "finds", "找到"),
]
NUMBERS = [
    ("one", "一"),
    ("two", "两"),
    ("three", "三"),
    ("four", "四"),
    ("five", "五"),
    ("six", "六"),
    ("seven", "七"),
    ("eight", "八"),
    ("nine", "九"),
    ("ten", "十"),
]
SIZES = [("big", "大"), ("small", "小"), ("old", "旧"), ("new", "新")]
COLOURS = [
    ("red", "红色"),
    ("blue", "蓝色"),
    ("green", "绿色"),
    ("yellow", "黄色"),
    ("black", "黑色"),
    ("white", "白色"),
]
# (singular, plural, chinese, measure word)
OBJECTS = [
    ("car", "cars", "汽车", "辆"),
    ("book", "books", "书", "本"),
    ("cat", "cats", "猫", "只"),
    ("dog", "dogs", "狗", "只"),
    ("bird", "birds", "鸟", "只"),
    ("apple", "apples", "苹果", "个"),
    ("cup", "cups", "杯子", "个"),
    ("box", "boxes", "盒子", "个"),
    ("pen", "pens", "笔", "支"),
    ("chair", "chairs", "椅子", "把"),
    ("hat", "hats", "帽子", "顶"),
    ("flower", "flowers", "花", "朵"),
]
TIMES = [("today", "今天"), ("yesterday", "昨天"), ("tomorrow", "明天"), ("tonight", "今晚")]
PLACES = [
    ("park", "公园"),
    ("school", "学校"),
    ("shop", "商店"),
    ("garden", "花园"),
    ("market", "市场"),
]


@dataclasses.dataclass(frozen=True)
class Pair:
    """One sentence pair.

    Attributes:
      source: English tokens.
      target: Chinese tokens (whole words).
      alignment: For each Chinese token, the index into `source` of the word it translates,
        or `None` for a function word.
    """

    source: tuple
    target: tuple
    alignment: tuple

    def content_positions(self):
        """Indices of the Chinese tokens that translate an English word."""
        return [i for i, a in enumerate(self.alignment) if a is not None]


class Vocabulary:
    """Token <-> id mapping with the special tokens first (`<pad>` is id 0).

    Example:

    ```python
    vocab = Vocabulary(["i", "see"])
    vocab.encode(["i", "see"])  # [4, 5]
    ```
    """

    def __init__(self, tokens):
        self.tokens = list(SPECIAL_TOKENS) + sorted(set(tokens) - set(SPECIAL_TOKENS))
        self._ids = {token: i for i, token in enumerate(self.tokens)}

    def __len__(self):
        return len(self.tokens)

    def id(self, token):
        return self._ids.get(token, self._ids[UNKNOWN])

    def encode(self, tokens):
        return [self.id(t) for t in tokens]

    def decode(self, ids):
        return [self.tokens[i] for i in ids]


@dataclasses.dataclass
class Corpus:
    """Train and held-out pairs (no sentence in both) with their vocabularies."""

    train: list
    heldout: list
    source_vocab: Vocabulary
    target_vocab: Vocabulary
    source_length: int  # longest English sentence
    target_length: int  # longest Chinese sentence + 1 (for <s> / </s>)


def _sample_pair(rng):
    """Draws one sentence pair; returns `(source, target, alignment)` lists."""
    subject_en, subject_zh = rng.choice(SUBJECTS)
    verb_en, verb_third_en, verb_zh = rng.choice(VERBS)
    number_en, number_zh = rng.choice(NUMBERS)
    colour_en, colour_zh = rng.choice(COLOURS)
    singular, plural, object_zh, measure = rng.choice(OBJECTS)
    size = rng.choice(SIZES) if rng.random() < 0.4 else None
    time = rng.choice(TIMES) if rng.random() < 0.4 else None
    place = rng.choice(PLACES) if rng.random() < 0.4 else None
    question = rng.random() < 0.2

    source = []
    index = {}  # role -> position of the English word

    def say(role, word):
        index[role] = len(source)
        source.append(word)

    if question:
        say("do", "does" if subject_en in THIRD_PERSON else "do")
        say("subject", subject_en)
        say("verb", verb_en)
    else:
        say("subject", subject_en)
        say("verb", verb_third_en if subject_en in THIRD_PERSON else verb_en)
    say("number", number_en)
    if size:
        say("size", size[0])
    say("colour", colour_en)
    say("object", singular if number_en == "one" else plural)
    if place:
        say("in", "in")
        say("the", "the")
        say("place", place[0])
    if time:
        say("time", time[0])

    target, alignment = [], []

    def write(word, role=None):
        target.append(word)
        alignment.append(None if role is None else index[role])

    write(subject_zh, "subject")
    if time:
        write(time[1], "time")
    if place:
        write("在")
        write(place[1], "place")
    write(verb_zh, "verb")
    write(number_zh, "number")
    write(measure)
    write(colour_zh, "colour")
    write("的")
    if size:
        write(size[1], "size")
    write(object_zh, "object")
    if question:
        write("吗")
    return source, target, alignment


def generate_pairs(count, seed=0):
    """Returns `count` distinct `Pair`s, deterministic for a given seed."""
    rng = random.Random(seed)
    seen, pairs = set(), []
    while len(pairs) < count:
        source, target, alignment = _sample_pair(rng)
        key = tuple(source)
        if key in seen:
            continue
        seen.add(key)
        pairs.append(Pair(tuple(source), tuple(target), tuple(alignment)))
    return pairs


def make_corpus(train_size=3000, heldout_size=200, seed=0):
    """Generates a corpus; held-out pairs are sentences the training split never contains.

    Vocabularies cover every word of the lexicon (not only the sampled ones), so ids do not
    depend on the sample.
    """
    pairs = generate_pairs(train_size + heldout_size, seed)
    word_tables = (SUBJECTS, NUMBERS, SIZES, COLOURS, TIMES, PLACES)
    source_words = [en for table in word_tables for en, _ in table]
    source_words += [w for v in VERBS for w in v[:2]] + [w for o in OBJECTS for w in o[:2]]
    source_words += ["do", "does", "in", "the"]
    target_words = [zh for table in word_tables for _, zh in table]
    target_words += [v[2] for v in VERBS] + [w for o in OBJECTS for w in o[2:]] + ["在", "的", "吗"]
    return Corpus(
        train=pairs[:train_size],
        heldout=pairs[train_size:],
        source_vocab=Vocabulary(source_words),
        target_vocab=Vocabulary(target_words),
        source_length=max(len(p.source) for p in pairs),
        target_length=max(len(p.target) for p in pairs) + 1,
    )


def pad(tokens, length):
    """`tokens` followed by `<pad>` up to `length`."""
    return list(tokens) + [PAD] * (length - len(tokens))


def decoder_tokens(pair, length):
    """What the decoder reads (`<s>` + Chinese) and predicts (Chinese + `</s>`), padded.

    Row `t` of the decoder's attention produces `outputs[t]`, so `outputs` are the labels that
    make the cross-attention rows readable (as in the TensorFlow translation tutorial).
    """
    inputs = pad([START] + list(pair.target), length)
    outputs = pad(list(pair.target) + [END], length)
    return inputs, outputs


def to_arrays(pairs, corpus):
    """Encodes pairs as int32 arrays `(source_ids, decoder_input_ids, decoder_output_ids)`."""
    import numpy as np

    source = [corpus.source_vocab.encode(pad(p.source, corpus.source_length)) for p in pairs]
    inputs, outputs = [], []
    for p in pairs:
        decoder_in, decoder_out = decoder_tokens(p, corpus.target_length)
        inputs.append(corpus.target_vocab.encode(decoder_in))
        outputs.append(corpus.target_vocab.encode(decoder_out))
    return tuple(np.asarray(rows, dtype="int32") for rows in (source, inputs, outputs))
