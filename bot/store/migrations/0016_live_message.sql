-- Where a run's live message is in Slack, and its permalink: the dashboard, message metadata and
-- outgoing events link to it. Empty for a run with no live message (a terminal run).
ALTER TABLE runs
    ADD COLUMN live_channel     text,
    ADD COLUMN live_ts          text,
    ADD COLUMN live_message_url text;
