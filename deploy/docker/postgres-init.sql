-- Run once by the postgres image on an empty data volume: the bridge's and the relay's roles and
-- databases (each daemon creates its own schema with `migrate`). No passwords: the roles log in
-- through the server's UNIX socket, which only the bridge and relay containers mount.
CREATE ROLE toxmail LOGIN;
CREATE DATABASE toxmail OWNER toxmail;
CREATE ROLE toxrelay LOGIN;
CREATE DATABASE toxrelay OWNER toxrelay;
