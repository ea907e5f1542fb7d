# Services of the Docker connector in docker-compose.yml (mounted over /app/services.py).
# Read, not executed. Their containers join the compose network, "genisys".
web = {"name": "web", "image": "nginx:1.27-alpine", "network": "genisys"}
