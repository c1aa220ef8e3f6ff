"""Where the data lives: the synthetic demo generator (`dataset.make_demo`) and the real features.

See dataset/README.md for where the THUMOS-14 features go. The loader itself is
`wsad_dataset.SampleDataset`.
"""
