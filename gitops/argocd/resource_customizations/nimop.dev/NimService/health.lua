-- Argo CD health of a nimop.dev NimService or NimCache, read from the conditions the operator
-- writes; both kinds follow the same rules.
--
--   Ready        NimService: True only when the current generation is fully rolled out and every
--                desired replica serves spec.model. NimCache: True only when the download Job
--                completed and reported the profiles and bytes it cached.
--   Reconciling  True while the operator works towards Ready (a rollout, a download, a retry).
--   Stalled      True only when a human must act (InvalidSpec, SecretNotFound, RolledBack,
--                InsufficientGPU, AuthenticationFailed, DiskFull, NetworkError, ...).
--
-- The rules match kstatus (Flux), so both tools agree on what the operator reports:
-- Healthy = Current, Progressing = InProgress, Degraded = Failed.

local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

local function text(value)
  if type(value) == "string" then
    return value
  end
  if type(value) == "number" or type(value) == "boolean" then
    return tostring(value)
  end
  return ""
end

-- "Reason: message", whichever of the two is set, or the fallback.
local function describe(condition, fallback)
  local reason, message = text(condition.reason), text(condition.message)
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" then
    return reason
  end
  if message ~= "" then
    return message
  end
  return fallback
end

if type(obj) ~= "table" or type(obj.status) ~= "table" then
  return hs
end
local status = obj.status
if type(status.conditions) ~= "table" then
  return hs
end

-- The first condition of each type; entries that are not conditions are skipped.
local conditions = {}
local found = false
for _, condition in ipairs(status.conditions) do
  local ok = type(condition) == "table" and type(condition.type) == "string"
  if ok and conditions[condition.type] == nil then
    conditions[condition.type] = condition
    found = true
  end
end
if not found then
  return hs
end

-- Conditions written for an older generation say nothing about the current spec.
local generation = nil
if type(obj.metadata) == "table" then
  generation = tonumber(obj.metadata.generation)
end
local observed = tonumber(status.observedGeneration)
if generation ~= nil and observed ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. text(generation)
  if observed ~= nil then
    hs.message = hs.message .. " (status is for generation " .. text(observed) .. ")"
  end
  return hs
end

local function is_true(type_)
  return conditions[type_] ~= nil and conditions[type_].status == "True"
end

if is_true("Stalled") then
  hs.status = "Degraded"
  hs.message = describe(conditions.Stalled, "Stalled: the operator needs a change to go on")
  return hs
end

if is_true("Ready") then
  hs.status = "Healthy"
  hs.message = describe(conditions.Ready, "Ready")
  return hs
end

if is_true("Reconciling") then
  hs.message = describe(conditions.Reconciling, "Reconciling")
  return hs
end

-- Not ready, yet neither working on it nor asking for help.
if conditions.Ready ~= nil and conditions.Ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(conditions.Ready, "Not ready")
  return hs
end

-- Ready is Unknown or missing.
if conditions.Ready ~= nil then
  hs.message = describe(conditions.Ready, hs.message)
end
return hs
