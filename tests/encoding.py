"""A trajectory's messages as one sequence of ids and labels, the way build_samples encodes a sample:
the reference the chat-format tests compare against."""
from data import IGNORE_INDEX, encode_pairs, join_pairs, pairs_that_fit


def encode_chat(tok, messages, max_len=None):
    """(ids, labels) in tok.chat_format; with max_len, the longest prefix of whole pairs that fits."""
    pairs = encode_pairs(tok, messages)
    return join_pairs(pairs[:pairs_that_fit(pairs, max_len)])


def trained_runs(ids, labels):
    """The runs of consecutive trained tokens, in order; a trained token's label is its id."""
    runs, run = [], []
    for token, label in zip(ids + [None], labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX:
            assert label == token
            run.append(label)
        elif run:
            runs.append(run)
            run = []
    return runs
