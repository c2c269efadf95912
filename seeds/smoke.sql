-- requires: base
-- Seed set "smoke": one member (password: password) with one published post, in plain SQL.
-- One statement (a data-modifying CTE) so any driver can run the file as it is; fixed
-- timestamps keep the rows identical between runs.
WITH new_user AS (
    INSERT INTO users (email, username, password_hash, role_id, created_at)
    VALUES (
        'smoke@example.org',
        'smoke',
        'pbkdf2_sha256$1000$736d6f6b652d73656564$0e0f0bd4c2e92152485b76e26a696fe5010df1182a754997342e77868209ac2e',
        (SELECT id FROM roles WHERE name = 'member'),
        timestamptz '2024-06-01'
    )
    RETURNING id
)
INSERT INTO posts (author_id, title, body, published, created_at)
SELECT id, 'Smoke test', 'If you can read this, the smoke seed ran.', true, timestamptz '2024-06-01'
FROM new_user;
