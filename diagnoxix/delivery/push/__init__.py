"""Web Push (RFC 8030, 8291, 8292): the push outbox and what it sends (docs/channels.md).

`router` decides after each commit which notifications may need a push and adds their jobs to the
durable timers in batches; `jobs` runs them (route to the user's subscriptions once the
acknowledgement is overdue, then one send per subscription); `sender` speaks to the push services;
`vapid` signs; `payload` decides what a push may say.
"""
