# Compute definitions for docker-compose.yml (mounted over /app/computes.py): the Docker
# connector, reached by its service name on the compose network. Read, not executed.
docker = {"name": "docker", "connector": "http://docker-connector:7051"}
