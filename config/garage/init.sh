#!/bin/sh
# Sets up the single Garage node of compose.s3.yaml through its admin API, once: gives the
# node a role in the layout, creates the buckets and imports the service's key with read,
# write and owner rights on them. Safe to run again (each step checks first). Needs only sh,
# curl and sed (the curl image).
#
# Environment: GARAGE_ADMIN (admin API base URL), GARAGE_ADMIN_TOKEN, BUCKETS (names
# separated by spaces), ACCESS_KEY_ID, SECRET_ACCESS_KEY.
set -eu

api() { # METHOD PATH [JSON BODY]
    curl -fsS -X "$1" -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} "$GARAGE_ADMIN/v2/$2"
}
# The first value of "FIELD":"…" in JSON read from stdin.
field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n 1; }

attempts=0
until status=$(api GET GetClusterStatus 2>/dev/null); do
    attempts=$((attempts + 1))
    [ "$attempts" -lt 60 ] || { echo "the Garage admin API does not answer" >&2; exit 1; }
    sleep 1
done
if printf '%s' "$status" | grep -q '"layoutVersion": *0,'; then
    node=$(printf '%s' "$status" | field id)
    api POST UpdateClusterLayout "{\"roles\":[{\"id\":\"$node\",\"zone\":\"dc1\",\"capacity\":100000000000,\"tags\":[]}]}" >/dev/null
    api POST ApplyClusterLayout '{"version":1}' >/dev/null
    echo "node $node joined the layout"
fi
if ! api GET "GetKeyInfo?id=$ACCESS_KEY_ID" >/dev/null 2>&1; then
    api POST ImportKey "{\"accessKeyId\":\"$ACCESS_KEY_ID\",\"secretAccessKey\":\"$SECRET_ACCESS_KEY\",\"name\":\"stayler\"}" >/dev/null
    echo "key $ACCESS_KEY_ID imported"
fi
for name in $BUCKETS; do
    bucket=$(api GET "GetBucketInfo?globalAlias=$name" 2>/dev/null | field id || true)
    if [ -z "$bucket" ]; then
        bucket=$(api POST CreateBucket "{\"globalAlias\":\"$name\"}" | field id)
        echo "bucket $name created"
    fi
    api POST AllowBucketKey \
        "{\"bucketId\":\"$bucket\",\"accessKeyId\":\"$ACCESS_KEY_ID\",\"permissions\":{\"read\":true,\"write\":true,\"owner\":true}}" >/dev/null
done
echo "Garage is ready: buckets $BUCKETS, key $ACCESS_KEY_ID"
