-- A response rule the gRPC-JSON transcoder cannot express: an ErrorInfo reason may carry its
-- own HTTP status (e.g. IDEMPOTENCY_KEY_REUSED -> 422, which no gRPC code maps to).
-- OVERRIDES is filled in by gateway/render.py from GATEWAY_REASON_STATUS.
local OVERRIDES = {}  -- @@OVERRIDES@@

function envoy_on_response(handle)
  local status = handle:headers():get(":status")
  if status == nil or tonumber(status) < 400 then
    return
  end
  local body = handle:body()
  local text = body and body:getBytes(0, body:length()) or ""
  local reason = text:match('"reason":"([A-Z0-9_]+)"')
  if reason ~= nil and OVERRIDES[reason] ~= nil then
    -- Header objects do not survive body(): fetch them again.
    handle:headers():replace(":status", tostring(OVERRIDES[reason]))
  end
end
