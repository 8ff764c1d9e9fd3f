"""Method plugins: one module per method, registered under the entry-point group `nndiff.methods`."""
