"""`python -m metaseg_ros.train.evaluate` as recorded in the model card and the benchmarks;
evaluation itself lives in metaseg_ros.eval.evaluate (console script `metaseg-eval`)."""

from metaseg_ros.eval.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
