"""The config layer: what runs before torch is imported. Rules (``rules``), the declared keys of
options (``declared``), argument checks (``arguments``), resolvers (``resolvers``), the compose
helper (``compose``), sweep job names (``sweep_names``), domain names (``domains``) and files in
installed distributions (``installed_files``). Only omegaconf and Hydra load here."""
