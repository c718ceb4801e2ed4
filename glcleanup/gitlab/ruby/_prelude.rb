# glcleanup prelude: sent ahead of every bundled script on the runner's stdin.
#
# Input:  ARGV.last is the parameters: JSON, zlib-deflated, base64 (data, never code).
# Output: exactly one line "GLCLEANUP-RESULT:<json>" on stdout, after whatever Rails printed
#         while booting. {"ok":true,"result":...} or {"ok":false,"error":{"kind","class","message"}}.
require "json"
require "base64"
require "zlib"

module Glcleanup
  MARKER = "GLCLEANUP-RESULT:"
  EVENT = "GLCLEANUP-EVENT:"

  # A failure the script means to report (not found, refused), as opposed to a crash.
  class Refusal < StandardError
    attr_reader :kind

    def initialize(kind, message)
      @kind = kind
      super(message)
    end
  end

  def self.params
    @params ||= begin
      raw = ARGV.last
      raw.nil? || raw.empty? ? {} : JSON.parse(Zlib::Inflate.inflate(Base64.strict_decode64(raw)))
    end
  end

  def self.emit(document)
    $stdout.flush
    $stdout.write("\n#{MARKER}#{JSON.generate(document)}\n")
    $stdout.flush
  end

  # A progress document glcleanup acts on at once (e.g. writes the journal before any change).
  # Raises if stdout is gone (connection cut), so nothing is changed without the caller hearing.
  def self.event(document)
    $stdout.write("\n#{EVENT}#{JSON.generate(document)}\n")
    $stdout.flush
  end

  def self.refuse!(kind, message)
    raise Refusal.new(kind, message)
  end

  # Runs the script body with the parameters; any exception becomes an error document and exit 1.
  def self.main
    emit({ "ok" => true, "result" => yield(params) })
  rescue Refusal => e
    emit({ "ok" => false, "error" => { "kind" => e.kind, "class" => e.class.name, "message" => e.message } })
    exit 1
  rescue StandardError, ScriptError => e
    emit({ "ok" => false, "error" => { "kind" => "exception", "class" => e.class.name, "message" => e.message,
                                       "backtrace" => Array(e.backtrace).first(8) } })
    exit 1
  end

  # Values as the database holds them (timestamps at full precision), for journals and reports.
  def self.raw_row(record)
    record.attributes_before_type_cast.transform_values { |v| v.respond_to?(:iso8601) ? v.iso8601(6) : v }
  end

  def self.time(value)
    value&.utc&.iso8601(6)
  end

  def self.retry_columns?
    columns = ContainerRepository.column_names
    columns.include?("failed_deletion_count") && columns.include?("next_delete_attempt_at")
  end

  # Where a repository's deletion stands; 17.5's retry columns only where the table has them.
  def self.deletion_state(repo)
    row = { "status" => repo.status, "status_updated_at" => time(repo.status_updated_at),
            "delete_started_at" => time(repo.delete_started_at),
            "expiration_policy_cleanup_status" => repo.expiration_policy_cleanup_status }
    if retry_columns?
      row["failed_deletion_count"] = repo.failed_deletion_count
      row["next_delete_attempt_at"] = time(repo.next_delete_attempt_at)
    end
    row
  end

  def self.version_info
    { "gitlab_version" => Gitlab::VERSION, "columns" => ContainerRepository.column_names, "retry_cap" => retry_cap }
  end

  # GitLab's behaviour per version, as glcleanup/gitlab_facts.py states it (sent with the parameters).
  def self.facts
    params.fetch("facts")
  end

  # The retry cap in effect, in gitlab_facts.RetryCap's words: native, feature_flag or none.
  def self.retry_cap
    rule = facts.fetch("retry_cap")
    info = Gitlab.version_info
    current = [info.major, info.minor]
    return "native" if (current <=> rule.fetch("native_from")) >= 0
    return "none" if (current <=> rule.fetch("flag_from")).negative?

    Feature.enabled?(rule.fetch("flag").to_sym) ? "feature_flag" : "none"
  end
end
