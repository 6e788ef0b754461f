-- toxmail bridge schema 10: reserved for another part of issue 12 (built on another branch).
-- This placeholder only keeps the version numbers contiguous on the retention branch; the real
-- migration 10 replaces it when the branches are merged.
SELECT 1;
