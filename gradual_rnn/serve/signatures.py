"""The functions of an export's SavedModel: over ids, over text, and the seeded sampling they share.

The state is `<float32>[depth, 2, batch, hidden]` (index 0 = c, 1 = h). Batch and time are dynamic.

Over ids (the Python API, `gradual_rnn.load`, and the `generate` command call these):

    initial_state(batch_size <int32>[])                    -> state (zeros)
    step(ids <int32>[batch, time], state)                  -> log_probs <float32>[batch, time, vocab],
                                                              state
    score_window(ids, targets <int32>[batch, time], state) -> target_log_probs <float32>[batch, time],
                                                              state
    score(ids <int32>[batch, time], lengths <int32>[batch]) -> nll_sum <float64>[batch],
                                                              token_count <float64>[batch],
                                                              target_log_probs <float32>[batch, time-1]
    draw_next(ids <int32>[batch, time], lengths <int32>[batch], state, seed <int64>[], step <int32>[],
              temperature <float32>[], top_k <int32>[], top_p <float32>[])
                                                           -> next_ids <int32>[batch], state

`score` starts from the zero state and scores `ids[b, 1:lengths[b]]`, each from the ids before it
(time >= 2). `draw_next` feeds row b its first `lengths[b]` ids (>= 1; a batch of prompts of
different lengths), then draws one next id per row (below).

Over text (TensorFlow Serving, `saved_model_cli run`):

    serving_default(texts <string>[batch]) -> log_prob <float64>[batch], token_count <int32>[batch],
                                              unknown_count <int32>[batch], perplexity <float64>[batch],
                                              token_log_probs <float32>[batch, most tokens]
    generate(prompts <string>[batch], num_words <int32>[], seed <int64>[], temperature <float32>[],
             top_k <int32>[], top_p <float32>[]) -> words <string>[batch, num_words], text <string>[batch]

Text is read as training reads it: split on whitespace (the characters Python's `str.split` splits
on) with `<eos>` appended; the vocabulary is a `tf.lookup.StaticHashTable` inside the graph, and a
word outside it becomes `<unk>` (counted in `unknown_count`). Each text is scored alone, as `score`
does: `<eos>` is fed first at the zero state and every token is scored from the ones before it.
`token_log_probs` is 0 past a text's tokens. `generate` feeds `<eos>` and the prompt and draws
`num_words` words; `text` is those words with `<eos>` as a line break.

Sampling (`draw_next`, `generate`, and through them the Python API and the command). Draw number
`step` of row b divides the log-probabilities after everything fed so far by the temperature, keeps
the `top_k` most likely words (all when top_k is 0; ties: the lower id), then the smallest set of the
most likely of those whose renormalised probability reaches `top_p` (nucleus sampling, Holtzman et
al. 2020; all when top_p is 1), and inverts the cumulative distribution of the kept words, in id
order, at `u` = element b of `stateless_uniform([batch], seed=[seed, step], float64, philox)`.
Temperature 0 takes the most likely word (the lowest id among equals). The draws are a fixed
function of the seed (Philox, the same on every machine), so a seed gives the same words wherever
the model computes the same log-probabilities; a row's draws depend on its position in the batch,
not on the other rows. Only a top_k or top_p cut ranks the vocabulary.
"""
import functools
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from gradual_rnn.nn import language_model as lm

# The characters Python's `str.split()` splits on (`chr(c).isspace()`), so that the graph splits a
# text into the same words as the trainer's reader; `tf.strings.split` alone splits on ASCII only.
PYTHON_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200b)))
                     + "\u2028\u2029\u202f\u205f\u3000")
_WHITESPACE_PATTERN = "[" + "".join(f"\\x{{{ord(character):x}}}" for character in PYTHON_WHITESPACE) + "]+"


# ----- the model over a window -----
def state_pairs(state, depth: int):
    """`<float32>[depth, 2, batch, hidden]` -> one (c, h) pair per layer, as the model takes them."""
    return tuple((state[index, 0], state[index, 1]) for index in range(depth))


def state_tensor(pairs):
    """One (c, h) pair per layer -> `<float32>[depth, 2, batch, hidden]`."""
    return tf.stack([tf.stack([cell, hidden]) for cell, hidden in pairs])


def _run_one_step_at_a_time(model: lm.LanguageModel, ids, pairs):
    """`model(ids, state)` as a graph loop of one-step calls (any rnn path, any time length)."""
    num_steps = tf.shape(ids)[1]
    logits = tf.TensorArray(tf.float32, size=num_steps)

    def body(step, logits, state):
        step_ids = ids[:, step][:, tf.newaxis]  # a static time of 1, which the basic path needs
        step_logits, new_pairs = model(step_ids, state_pairs(state, model.num_layers))
        return step + 1, logits.write(step, step_logits[:, 0]), state_tensor(new_pairs)

    _, logits, state = tf.while_loop(lambda step, *_: step < num_steps, body,
                                     (tf.constant(0), logits, state_tensor(pairs)))
    return tf.transpose(logits.stack(), [1, 0, 2]), state_pairs(state, model.num_layers)


def run_model(model: lm.LanguageModel, ids, state):
    """logits `[batch, time, vocab]` and new state tensor for ids of any (dynamic) time length."""
    pairs = state_pairs(state, model.num_layers)
    if all(model_layer.uses_cudnn_path() for model_layer in model.lstm_layers):
        logits, new_pairs = model(ids, pairs)
    else:
        logits, new_pairs = _run_one_step_at_a_time(model, ids, pairs)
    return logits, state_tensor(new_pairs)


def feed(model: lm.LanguageModel, ids, lengths, state):
    """Feeds row b of `ids <int32>[batch, time]` its first `lengths[b]` ids (at least 1) one step at
    a time. Returns the log-probabilities after each row's last id, `<float32>[batch, vocab]`, and
    the state after it: the rows of a batch of prompts of different lengths each stop at their end."""

    def body(step, state, last):
        logits, pairs = model(ids[:, step][:, tf.newaxis], state_pairs(state, model.num_layers))
        active = step < lengths
        state = tf.where(active[tf.newaxis, tf.newaxis, :, tf.newaxis], state_tensor(pairs), state)
        last = tf.where(active[:, tf.newaxis], tf.nn.log_softmax(logits[:, 0]), last)
        return step + 1, state, last

    last = tf.zeros(tf.stack([tf.shape(ids)[0], model.vocab_size]))
    _, state, last = tf.while_loop(lambda step, *_: step < tf.shape(ids)[1], body, (tf.constant(0), state, last))
    return last, state


# ----- sampling -----
def draw(log_probs, uniforms, temperature, top_k, top_p):
    """One id per row of `log_probs <float32>[batch, vocab]` at `uniforms <float64>[batch]` in [0, 1):
    temperature, then top-k, then top-p, then the inverse of the kept words' cumulative distribution
    in id order (the module docstring); temperature 0 is the argmax. Float64; `<int32>[batch]`."""
    greedy = temperature <= 0
    scale = tf.where(greedy, tf.constant(1.0, tf.float64), tf.cast(temperature, tf.float64))
    scaled = tf.cast(log_probs, tf.float64) / scale
    weights = tf.exp(scaled - tf.reduce_max(scaled, axis=-1, keepdims=True))
    weights = tf.cond(top_k > 0, lambda: weights * _top_k_mask(log_probs, top_k), lambda: weights)
    weights = tf.cond(top_p < 1, lambda: weights * _nucleus_mask(weights, top_p), lambda: weights)
    cumulative = tf.cumsum(weights, axis=-1)
    position = tf.reduce_sum(tf.cast(cumulative <= uniforms[:, tf.newaxis] * cumulative[:, -1:], tf.int32), -1)
    last_kept = tf.shape(weights)[-1] - 1 - tf.argmax(tf.reverse(weights, [-1]) > 0, axis=-1, output_type=tf.int32)
    sampled = tf.minimum(position, last_kept)  # u * total rounded up to the total would pass the last word
    return tf.where(greedy, tf.argmax(log_probs, axis=-1, output_type=tf.int32), sampled)


def _in_id_order(ranked_ids, ranked_values, vocab_size):
    """`<float64>[batch, vocab_size]`: each row's `ranked_values` put at their `ranked_ids`, 0 elsewhere."""
    batch_size, count = tf.shape(ranked_ids)[0], tf.shape(ranked_ids)[1]
    rows = tf.repeat(tf.range(batch_size)[:, tf.newaxis], count, axis=1)
    return tf.scatter_nd(tf.stack([rows, ranked_ids], axis=-1), ranked_values, tf.stack([batch_size, vocab_size]))


def _top_k_mask(log_probs, top_k):
    """1 for the `top_k` most likely words of each row (ties: the lower id), 0 for the others."""
    vocab_size = tf.shape(log_probs)[-1]
    chosen = tf.math.top_k(log_probs, tf.minimum(top_k, vocab_size)).indices
    return _in_id_order(chosen, tf.ones(tf.shape(chosen), tf.float64), vocab_size)


def _nucleus_mask(weights, top_p):
    """1 for the smallest set of most likely words whose share of `weights` reaches `top_p`."""
    vocab_size = tf.shape(weights)[-1]
    ranked = tf.math.top_k(weights, vocab_size)  # descending; ties: the lower id first
    shares = ranked.values / tf.reduce_sum(weights, axis=-1, keepdims=True)
    keep = tf.cumsum(shares, axis=-1, exclusive=True) < tf.cast(top_p, tf.float64)
    return _in_id_order(ranked.indices, tf.cast(keep, tf.float64), vocab_size)


def uniforms_for(batch_size, seed, step):
    """`<float64>[batch_size]` in [0, 1): the draws of `step` (Philox, a function of seed and step)."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.stateless_uniform(tf.reshape(batch_size, [1]), key, dtype=tf.float64, alg="philox")


def _check_sampling(temperature, top_k, top_p):
    """The graph's own check of the sampling settings (the Python API checks them with one-line errors)."""
    tf.debugging.assert_greater_equal(temperature, 0.0, message="temperature must be >= 0 (0 = greedy)")
    tf.debugging.assert_all_finite(temperature, message="temperature must be finite")
    tf.debugging.assert_non_negative(top_k, message="top_k must be >= 0 (0 = the whole vocabulary)")
    tf.debugging.assert_greater(top_p, 0.0, message="top_p must be in (0, 1]")
    tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1]")


# ----- text -----
def split_words(texts):
    """`<string>[batch]` -> ragged `<string>[batch, (words)]`, split as Python's `str.split()` does."""
    return tf.strings.split(tf.strings.regex_replace(texts, _WHITESPACE_PATTERN, " "))


class Vocabulary(tf.Module):
    """The export's words as a table inside the graph: word -> id, with `<unk>` for the others."""

    def __init__(self, words: Sequence[str], eos: str, unk: str):
        super().__init__()
        if eos not in words:
            raise ValueError(f"The vocabulary has no {eos}, which text scoring feeds first.")
        self.words = tf.constant(list(words))
        self.eos, self.eos_id = eos, words.index(eos)
        self.unk, self.unk_id = unk, (words.index(unk) if unk in words else None)
        initializer = tf.lookup.KeyValueTensorInitializer(self.words, tf.range(len(words), dtype=tf.int32))
        self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)

    def ids(self, tokens):
        """Ragged words -> (ragged ids with `<unk>` for unknown words, ragged `<bool>` unknown)."""
        found = tokens.with_flat_values(self.table.lookup(tokens.flat_values))
        unknown = found < 0
        if self.unk_id is None:
            tf.debugging.assert_equal(tf.reduce_any(unknown.flat_values), False,
                                      message=f"words outside the vocabulary, which has no {self.unk}")
            return found, unknown
        return found.with_flat_values(tf.where(unknown.flat_values, self.unk_id, found.flat_values)), unknown

    def after_eos(self, ids):
        """`<eos>`, then each row of ragged `ids`: padded `<int32>[batch, time >= 2]` and the lengths."""
        batch_size = ids.nrows(out_type=tf.int32)
        fed = tf.concat([tf.fill(tf.stack([batch_size, 1]), self.eos_id), ids], axis=1)
        padded = fed.to_tensor()
        padded = tf.pad(padded, [[0, 0], [0, tf.maximum(0, 2 - tf.shape(padded)[1])]])  # `score` needs 2
        return padded, tf.cast(fed.row_lengths(), tf.int32)

    def render(self, words):
        """`<string>[batch, n]` -> `<string>[batch]`: the words joined by spaces, `<eos>` a line break."""
        lines = tf.strings.reduce_join(tf.where(words == self.eos, "\n", words), axis=1, separator=" ")
        return tf.strings.regex_replace(lines, " ?\n ?", "\n")


# ----- the signature functions -----
def _compiled(python_function, *specs):
    return tf.function(python_function, input_signature=list(specs), autograph=False)


def _sampling_specs() -> List[tf.TensorSpec]:
    return [tf.TensorSpec([], tf.float32, name="temperature"), tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.float32, name="top_p")]


def serving_functions(model: lm.LanguageModel, vocabulary: Optional[Vocabulary] = None) -> Dict:
    """The signature functions of the SavedModel by name, each a `tf.function` with its input
    signature; the text signatures only with a `vocabulary`. They call one another as functions, so
    the SavedModel holds the model's graph twice (`run_model` and `feed`), not once per signature."""
    depth, hidden = model.num_layers, model.hidden_size
    state_spec = tf.TensorSpec([depth, 2, None, hidden], tf.float32, name="state")
    ids_spec = tf.TensorSpec([None, None], tf.int32, name="ids")
    lengths_spec = tf.TensorSpec([None], tf.int32, name="lengths")
    run = _compiled(functools.partial(run_model, model), ids_spec, state_spec)
    fed = _compiled(functools.partial(feed, model), ids_spec, lengths_spec, state_spec)

    def initial_state(batch_size):
        return {"state": tf.zeros(tf.stack([depth, 2, batch_size, hidden]))}

    def step(ids, state):
        logits, new_state = run(ids, state)
        return {"log_probs": tf.nn.log_softmax(logits), "state": new_state}

    def score_window(ids, targets, state):
        logits, new_state = run(ids, state)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        return {"target_log_probs": -losses, "state": new_state}

    def score(ids, lengths):
        zeros = initial_state(tf.shape(ids)[0])["state"]
        target_log_probs = score_window(ids[:, :-1], ids[:, 1:], zeros)["target_log_probs"]
        mask = tf.sequence_mask(lengths - 1, tf.shape(ids)[1] - 1)
        target_log_probs = tf.where(mask, target_log_probs, 0.0)
        return {"nll_sum": -tf.reduce_sum(tf.cast(target_log_probs, tf.float64), axis=1),
                "token_count": tf.reduce_sum(tf.cast(mask, tf.float64), axis=1),
                "target_log_probs": target_log_probs}

    def draw_next(ids, lengths, state, seed, step, temperature, top_k, top_p):
        _check_sampling(temperature, top_k, top_p)
        log_probs, new_state = fed(ids, lengths, state)
        uniforms = uniforms_for(tf.shape(ids)[0], seed, step)
        return {"next_ids": draw(log_probs, uniforms, temperature, top_k, top_p), "state": new_state}

    functions = dict(
        initial_state=_compiled(initial_state, tf.TensorSpec([], tf.int32, name="batch_size")),
        step=_compiled(step, ids_spec, state_spec),
        score_window=_compiled(score_window, ids_spec, tf.TensorSpec([None, None], tf.int32, name="targets"),
                               state_spec),
        score=_compiled(score, ids_spec, lengths_spec),
        draw_next=_compiled(draw_next, ids_spec, lengths_spec, state_spec, tf.TensorSpec([], tf.int64, name="seed"),
                            tf.TensorSpec([], tf.int32, name="step"), *_sampling_specs()))
    if vocabulary is not None:
        functions.update(_text_functions(vocabulary, functions))
    return functions


def _text_functions(vocabulary: Vocabulary, functions: Dict) -> Dict:
    """`serving_default` and `generate`, calling the id functions (the module docstring)."""
    score, draw_next, initial_state = functions["score"], functions["draw_next"], functions["initial_state"]

    def serving_default(texts):
        words = split_words(texts)
        tokens = tf.concat([words, tf.fill(tf.stack([tf.shape(texts)[0], 1]), vocabulary.eos)], axis=1)
        ids, unknown = vocabulary.ids(tokens)
        scored = score(*vocabulary.after_eos(ids))
        token_count = tf.cast(tokens.row_lengths(), tf.int32)
        log_prob = -scored["nll_sum"]
        return {"log_prob": log_prob, "token_count": token_count,
                "unknown_count": tf.reduce_sum(tf.cast(unknown, tf.int32), axis=1),
                "perplexity": tf.exp(-log_prob / tf.cast(token_count, tf.float64)),
                "token_log_probs": scored["target_log_probs"]}

    def generate(prompts, num_words, seed, temperature, top_k, top_p):
        tf.debugging.assert_positive(num_words, message="num_words must be at least 1")
        ids, _ = vocabulary.ids(split_words(prompts))
        sampling = (temperature, top_k, top_p)
        first = draw_next(*vocabulary.after_eos(ids), initial_state(tf.shape(prompts)[0])["state"], seed, 0,
                          *sampling)
        drawn = tf.TensorArray(tf.int32, size=num_words).write(0, first["next_ids"])

        def body(step, drawn, state):
            previous = drawn.read(step - 1)
            result = draw_next(previous[:, tf.newaxis], tf.ones_like(previous), state, seed, step, *sampling)
            return step + 1, drawn.write(step, result["next_ids"]), result["state"]

        _, drawn, _ = tf.while_loop(lambda step, *_: step < num_words, body, (tf.constant(1), drawn, first["state"]))
        words = tf.gather(vocabulary.words, tf.transpose(drawn.stack()))
        return {"words": words, "text": vocabulary.render(words)}

    return dict(
        serving_default=_compiled(serving_default, tf.TensorSpec([None], tf.string, name="texts")),
        generate=_compiled(generate, tf.TensorSpec([None], tf.string, name="prompts"),
                           tf.TensorSpec([], tf.int32, name="num_words"), tf.TensorSpec([], tf.int64, name="seed"),
                           *_sampling_specs()))
