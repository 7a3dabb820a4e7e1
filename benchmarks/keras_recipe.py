"""The tutorial's recipe in Keras 3 on TensorFlow (CPU), timed; run by bench_training.py in a subprocess.

Written from the recipe (Conv32-pool-Conv64-pool-Dropout0.25-Dense128-Dropout0.5-Dense10, RMSprop,
categorical cross-entropy, batch 128, validation_split 0.3, default progress bar), not copied from the tutorial.
Input: a compressed .npz with uint8 ``x_train`` (N, 28, 28), ``y_train`` (N,), ``x_test``, ``y_test``, the form
``keras.datasets.mnist.load_data()`` reads (``mnist.npz``).
Prints one JSON line: per-epoch seconds; ``fit_seconds``, from loading the arrays (np.load, scaling to [0, 1],
one-hot labels, as the tutorial prepares them) to the end of ``model.fit`` with validation, which matches what
mnist_lit's ``Trainer.fit`` times (reading the IDX files in prepare_data/setup, then training); ``fit_only_seconds``
(``model.fit`` alone); and test accuracy. After the fit it runs the rest of the tutorial's code, as a user's
whole process does: ``evaluate`` (with Keras's progress bar), ``predict`` of the first test digit and the plot of
it with matplotlib (which must be installed next to TensorFlow).
"""

import json
import sys
import time

import numpy as np


def main(npz_path: str, epochs: int, threads: int) -> None:
    import keras
    import tensorflow as tf
    from keras import layers

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    data = np.load(npz_path)
    x_train = data["x_train"].reshape(-1, 28, 28, 1).astype("float32") / 255.0
    x_test = data["x_test"].reshape(-1, 28, 28, 1).astype("float32") / 255.0
    y_train = keras.utils.to_categorical(data["y_train"], 10)
    y_test = keras.utils.to_categorical(data["y_test"], 10)
    epoch_times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    fit_start = time.perf_counter()
    # Keras's default verbosity, as the tutorial runs it: a progress bar, like mnist_lit's (stdout is read
    # by bench_training.py, which takes the JSON from the last line).
    model.fit(x_train, y_train, validation_split=0.3, epochs=epochs, batch_size=128, callbacks=[Timer()])
    end = time.perf_counter()
    test_acc = float(model.evaluate(x_test, y_test)[1])  # the tutorial's default verbosity: a progress bar
    # The tutorial's last step, part of "its own code" as issue 20 times it: predict the first test digit, print
    # the probabilities and the digit, and show the digit with matplotlib (Agg here: nothing goes on screen).
    probs = model.predict(x_test[:1])
    print(probs[0], int(probs.argmax()))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imshow(x_test[0].reshape(28, 28), cmap="Greys")
    print(
        json.dumps(
            {
                "epoch_seconds": epoch_times,
                "fit_seconds": end - start,
                "fit_only_seconds": end - fit_start,
                "test_acc": test_acc,
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
