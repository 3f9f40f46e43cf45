-- 0017: which webhook deliveries carried a notification, for the dashboard's "Where it went". A
-- delivery of a `notification.*` event names its notification in its payload (`notification_id`,
-- outside its `content`, so it stays once the body is removed); this finds them by it.
CREATE INDEX timers_webhook_notification ON timers (json_extract(payload, '$.notification_id'))
    WHERE kind = 'webhook';
