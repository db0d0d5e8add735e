-- A fleet run's steps run on several hosts: each step names its host ('' for one host).
ALTER TABLE run_steps ADD COLUMN host text NOT NULL DEFAULT '';
