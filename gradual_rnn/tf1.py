"""`python -m gradual_rnn.tf1 {evaluate,export,start,write} ...`: see gradual_rnn.serve.tf1 (the commands)
and gradual_rnn.serve.tf1_command (their command line, checked before TensorFlow loads)."""
from gradual_rnn.serve.tf1_command import run_main

if __name__ == "__main__":
    run_main()
