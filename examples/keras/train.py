"""Your own training code for Kiln, with Keras 3 on JAX (CPU): a small fully connected network, one report per epoch.

    kiln train -t TRAINING_SET --entry-point examples/keras/train.py [-p units=64]

Needs Keras and JAX (`pip install -e ".[examples]"`, or `pip install keras "jax[cpu]"`). The network standardizes its
inputs itself (a Normalization layer adapted on the training rows) and, for regression, puts its answers back on the
label's scale (a Rescaling layer), so the saved model answers raw encoded rows on its own. The same file trains a
binary, a multiclass or a regression model, as the context's task says.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # read once, when keras is first imported
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no search for accelerators

import keras  # after the backend is chosen
import numpy as np

PARAMS = {  # what `kiln tune --entry-point` may search
    "learning_rate": {"low": 1e-4, "high": 3e-2, "log": True},
    "units": {"low": 8, "high": 128, "type": "int", "log": True},
    "dropout": {"low": 0.0, "high": 0.5},
}
DEFAULTS = {"learning_rate": 0.003, "units": 16, "dropout": 0.2}  # small data: a small, steady network
MAX_ITERATIONS = 30  # reports a run makes: one per epoch
BATCH_SIZE = 32


def build(context):
    """The network for the context's task, its inputs standardized on the training rows."""
    units, dropout = int(context.params["units"]), float(context.params["dropout"])
    normalize = keras.layers.Normalization()
    normalize.adapt(context.x_train)
    inputs = keras.Input(shape=(context.x_train.shape[1],))
    hidden = normalize(inputs)
    for _ in range(2):
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
        hidden = keras.layers.Dropout(dropout)(hidden)
    if context.task == "multiclass":
        outputs = keras.layers.Dense(len(context.classes), activation="softmax")(hidden)
        loss = "sparse_categorical_crossentropy"
    elif context.task == "binary":
        outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
        loss = "binary_crossentropy"
    else:  # regression: the network learns the standardized label, the last layer scales it back
        y = np.asarray(context.y_train, dtype="float64")
        standard = keras.layers.Dense(1)(hidden)
        outputs = keras.layers.Rescaling(scale=float(y.std()) or 1.0, offset=float(y.mean()))(standard)
        loss = "mean_squared_error"
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(float(context.params["learning_rate"])), loss=loss)
    return model


def train(context):
    keras.utils.set_random_seed(int(context.seed))  # weights, dropout and shuffling: the same run for the same seed
    model = build(context)
    label = "int32" if context.task == "multiclass" else "float32"
    x, y = np.asarray(context.x_train, dtype="float32"), np.asarray(context.y_train, dtype=label)
    x_valid, y_valid = np.asarray(context.x_valid, dtype="float32"), np.asarray(context.y_valid, dtype=label)
    best_loss, best_weights = float("inf"), None
    for epoch in range(1, MAX_ITERATIONS + 1):
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=True, verbose=0)
        context.report(epoch, model)  # scored on the validation rows; a tuning job may stop the trial here
        loss = float(model.evaluate(x_valid, y_valid, batch_size=1024, verbose=0))
        if loss < best_loss:  # small data overfits: the epoch with the lowest validation loss is the one kept
            best_loss, best_weights = loss, model.get_weights()
    if best_weights is not None:  # None: the validation loss was never a number (NaN)
        model.set_weights(best_weights)
    return model


def predict(model, x):
    out = model.predict(np.asarray(x, dtype="float32"), batch_size=1024, verbose=0)
    return out if out.shape[1] > 1 else out[:, 0]  # [N, K] class probabilities, or P(positive) / values [N]
