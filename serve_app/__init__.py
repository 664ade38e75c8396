"""Plain-Python serving: typed config, OpenAI protocol models, the request pipeline, the decode
engine, agent tools, workflows and the command line. No Ray Serve deployment lives here
(`deployments/` holds them); nothing here imports `deployments`."""
