"""Every hidden state of a vmapped batch of variable-length sequences.

Run with `python examples/hidden_states.py`.
"""

import jax
import jax.numpy as jnp
import jax.random as jr

import eqrnn


def main() -> None:
    key_gru, key_lstm, key_data = jr.split(jr.key(0), 3)
    batch, time, input_size, hidden_size = 4, 10, 3, 8
    inputs = jr.normal(key_data, (batch, time, input_size))
    lengths = jnp.array([10, 7, 3, 1])  # steps after each length are padding

    gru = eqrnn.GRUCell(input_size, hidden_size, key=key_gru)
    lstm = eqrnn.LSTMCell(input_size, hidden_size, key=key_lstm)

    @jax.jit
    def run(inputs, lengths):
        def one(x, n):
            return (
                eqrnn.scan_all_hidden(gru, x, length=n),  # every step's h
                eqrnn.scan_last(gru, x, length=n),  # h at the last valid step
                eqrnn.scan_all_hidden(lstm, x, length=n),  # every step's (h, c)
            )

        return jax.vmap(one)(inputs, lengths)

    gru_hs, gru_last, (lstm_hs, lstm_cs) = run(inputs, lengths)
    print(f"inputs            {inputs.shape}  (batch, time, input_size)")
    print(f"lengths           {lengths.tolist()}")
    print(f"GRU   all h       {gru_hs.shape}  (batch, time, hidden_size)")
    print(f"GRU   last h      {gru_last.shape}  (batch, hidden_size)")
    print(f"LSTM  all h, c    {lstm_hs.shape}, {lstm_cs.shape}")
    # The last valid state of each sequence is its row at `length - 1`, and the
    # padded steps after it are zero.
    at_length = gru_hs[jnp.arange(batch), lengths - 1]
    assert jnp.allclose(at_length, gru_last)
    assert not jnp.any(gru_hs[2, 3:])
    print("GRU   hs[b, length-1] == scan_last: True; padded steps are zero: True")


if __name__ == "__main__":
    main()
