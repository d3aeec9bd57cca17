"""Trains the PTB word language model of Zaremba et al. (2014) or of Gradual Learning (Aharoni,
Rattner & Permuter 2017): the command the original programs had, kept as a short wrapper.

    python ptb_word_lm.py --model=large --gradual
    python ptb_word_lm.py --model=small --data_path=/data/ptb --save_path=runs/small
    python ptb_word_lm.py --helpfull

The command and every flag live in `gradual_rnn/cli/train.py`; `python -m gradual_rnn train` is the
same command. Running it again with the same --save_path resumes the run.
"""
from gradual_rnn.cli import train


def run_main() -> None:
    train.run_main()


if __name__ == "__main__":
    run_main()
