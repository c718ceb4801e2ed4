# frozen_string_literal: true

# The lab's imitation of GitLab's registry side, for `stop-loop --mode finish` (finish.rb): only what
# GitLab has, with the same names, bytes and headers (glcleanup/lab/README.md names each GitLab file).
#
#   (Gitlab.config.registry is gitlab_env.rb's, config/initializers/1_settings.rb)
#   Auth::ContainerRegistryAuthenticationService    app/services/auth/container_registry_authentication_service.rb
#     .full_access_token(*names)                    + lib/json_web_token/rsa_token.rb (reads the key file)
#   ContainerRegistry::Client                       lib/container_registry/client.rb + base_client.rb
#   ContainerRegistry::Tag                          lib/container_registry/tag.rb (name, digest)
#   ContainerRepository#client, #manifest, #tags, #tags_count, #delete_tag / #delete_tag_by_digest
#                                                   app/models/container_repository.rb
#   Projects::ContainerRepository::ThirdParty::DeleteTagsService
#                                                   app/services/projects/container_repository/third_party/delete_tags_service.rb
#
# Not modelled: the GitLab-registry branches (gitlab_api_client, /gitlab/v1 tag pages), Faraday's
# error-tracking callback, redirects for blobs. The lab registry is a third-party Distribution 2.8.
# net/http and openssl load on first use: scripts that never talk to the registry boot as fast as before.


module Auth
  class ContainerRegistryAuthenticationService
    AUDIENCE = "container_registry"

    # A full-access RS256 JWT signed with Gitlab.config.registry.key; a missing key file raises
    # Errno::ENOENT, as JSONWebToken::RSAToken#key_data (File.read) does.
    def self.full_access_token(*names)
      require "openssl"
      require "securerandom"
      require "base64"
      registry = Gitlab.config.registry
      key = OpenSSL::PKey::RSA.new(File.read(registry.key))
      now = Time.now.to_i
      payload = { iss: registry.issuer, aud: AUDIENCE, iat: now, nbf: now - 5, exp: now + 300,
                  jti: SecureRandom.uuid,
                  access: names.flatten.map { |n| { type: "repository", name: n, actions: %w[*] } } }
      encode = ->(part) { Base64.urlsafe_encode64(part, padding: false) }
      signing_input = [encode.call(JSON.generate(typ: "JWT", alg: "RS256")), encode.call(JSON.generate(payload))]
                      .join(".")
      "#{signing_input}.#{encode.call(key.sign(OpenSSL::Digest.new('SHA256'), signing_input))}"
    end
  end
end

module ContainerRegistry
  # The Faraday connection of base_client.rb, on Net::HTTP (Faraday's :net_http adapter): base URL,
  # `User-Agent: GitLab/<version>`, `Authorization: Bearer <jwt>`, `Accept` = ACCEPTED_TYPES joined.
  # Faraday's retry middleware (RETRY_OPTIONS: max 1, interval 5 s) retries idempotent methods once
  # on connection errors; POST is not among them.
  class BaseClient
    DOCKER_DISTRIBUTION_MANIFEST_V2_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
    OCI_MANIFEST_V1_TYPE = "application/vnd.oci.image.manifest.v1+json"
    CONTAINER_IMAGE_V1_TYPE = "application/vnd.docker.container.image.v1+json"
    ACCEPTED_TYPES = [DOCKER_DISTRIBUTION_MANIFEST_V2_TYPE, OCI_MANIFEST_V1_TYPE].freeze
    RETRY_INTERVAL = 5
    IDEMPOTENT = %w[DELETE GET HEAD OPTIONS PUT].freeze

    # What Faraday returns, reduced to what the callers read.
    Response = Struct.new(:status, :headers, :body) do
      def success?
        status.between?(200, 299)
      end
    end

    class ConnectionFailed < StandardError; end

    def initialize(base_uri, options = {})
      @base_uri = URI.parse(base_uri.to_s)
      @options = options
    end

    def request(method, path, body: nil, headers: {}, timeout: true)
      require "net/http"
      uri = @base_uri.dup
      uri.path, uri.query = path.split("?", 2)
      attempts = 0
      begin
        attempts += 1
        perform(method, uri, body, headers, timeout)
      rescue Errno::ECONNREFUSED, Errno::ECONNRESET, Errno::EHOSTUNREACH, Net::OpenTimeout, Net::ReadTimeout,
             EOFError => e
        if attempts == 1 && IDEMPOTENT.include?(method)
          sleep(RETRY_INTERVAL)
          retry
        end
        raise ConnectionFailed, "#{e.class}: #{e.message}"
      end
    end

    private

    def perform(method, uri, body, headers, timeout)
      http = Net::HTTP.new(uri.host, uri.port)
      if uri.scheme == "https"
        http.use_ssl = true
        ca = GitlabLab.setting("registry_ca_file").to_s
        http.ca_file = ca unless ca.empty?
      end
      if timeout # Gitlab::HTTP::DEFAULT_TIMEOUT_OPTIONS
        http.open_timeout = 10
        http.read_timeout = 20
        http.write_timeout = 30
      end
      req = Net::HTTPGenericRequest.new(method, !body.nil?, method != "HEAD", uri.request_uri)
      req["User-Agent"] = "GitLab/#{Gitlab::VERSION}"
      req["Accept"] = ACCEPTED_TYPES.join(", ")
      req["Authorization"] = "Bearer #{@options[:token]}" if @options[:token]
      headers.each { |k, v| req[k] = v }
      req.body = body unless body.nil?
      res = http.start { |h| h.request(req) }
      Response.new(res.code.to_i, res.each_header.to_h, res.body)
    end

    def response_body(response)
      return unless response.success?

      type = response.headers["content-type"].to_s
      type.include?("json") ? JSON.parse(response.body.to_s) : response.body
    rescue JSON::ParserError
      nil
    end

    def delete_if_exists(path)
      result = request("DELETE", path)
      result.success? || result.status == 404
    end
  end

  class Client < BaseClient
    DEFAULT_TAGS_PAGE_SIZE = 10_000

    def registry_info
      response = request("GET", "/v2/")
      return {} unless response&.success?

      version = response.headers["gitlab-container-registry-version"]
      { version: version, features: response.headers.fetch("gitlab-container-registry-features", "").split(",")
                                             .map(&:strip), vendor: version ? "gitlab" : "other" }
    end

    def connected?
      !registry_info.empty?
    end

    def repository_tags(name, page_size: DEFAULT_TAGS_PAGE_SIZE)
      response_body(request("GET", "/v2/#{name}/tags/list?n=#{page_size}"))
    end

    def repository_tag_digest(name, reference)
      response = request("HEAD", "/v2/#{name}/manifests/#{reference}")
      response.headers["docker-content-digest"] if response.success?
    end

    def delete_repository_tag_by_digest(name, reference)
      delete_if_exists("/v2/#{name}/manifests/#{reference}")
    end

    def supports_tag_delete?
      @supports_tag_delete ||= begin
        probe = GitlabLab.version_at_least?(16, 6) ? "/v2/name/manifests/tag" : "/v2/name/tags/reference/tag"
        response = request("OPTIONS", probe)
        response.success? && response.headers["allow"].to_s.include?("DELETE") ? :yes : :no
      end
      @supports_tag_delete == :yes
    end

    def upload_raw_blob(path, blob)
      require "digest"
      digest = "sha256:#{Digest::SHA256.hexdigest(blob)}"
      [blob, digest] if upload_blob(path, blob, digest).success?
    end

    # POST /v2/<name>/blobs/uploads/, then PUT <Location path>?<query>&digest=... (only the Location's
    # path and query are used: the PUT goes to the configured registry, as Faraday does).
    def upload_blob(name, content, digest)
      upload = request("POST", "/v2/#{name}/blobs/uploads/", timeout: false)
      return upload unless upload.success?

      location = URI(upload.headers["location"].to_s)
      query = [location.query, URI.encode_www_form(digest: digest)].compact.join("&")
      request("PUT", "#{location.path}?#{query}", body: content, timeout: false,
                                                  headers: { "Content-Type" => "application/octet-stream" })
    end

    # The dummy image: config blob `JSON.pretty_generate({config: {}})` (21 bytes with the json gem
    # before 2.8, which prints an empty object as "{\n  }"), and a schema-2 manifest WITHOUT `layers`.
    def generate_empty_manifest(path)
      image = { config: {} }
      image, image_digest = upload_raw_blob(path, JSON.pretty_generate(image))
      return unless image

      { schemaVersion: 2, mediaType: DOCKER_DISTRIBUTION_MANIFEST_V2_TYPE,
        config: { mediaType: CONTAINER_IMAGE_V1_TYPE, size: image.size, digest: image_digest } }
    end

    def put_tag(name, reference, manifest)
      response = request("PUT", "/v2/#{name}/manifests/#{reference}", body: JSON.pretty_generate(manifest),
                                                                      timeout: false,
                                                                      headers: { "Content-Type" => DOCKER_DISTRIBUTION_MANIFEST_V2_TYPE })
      response.headers["docker-content-digest"] if response.success?
    end

    # Before the OCI switch (16.6 in the lab) GitLab deleted tags by name through its fork's endpoint.
    unless GitlabLab.version_at_least?(16, 6)
      def delete_repository_tag_by_name(name, reference)
        delete_if_exists("/v2/#{name}/tags/reference/#{reference}")
      end
    end
  end

  class Tag
    attr_reader :repository, :name

    def initialize(repository, name)
      @repository = repository
      @name = name
    end

    def digest
      @digest ||= repository.client.repository_tag_digest(repository.path, name)
    end
  end
end

class ContainerRepository
  def client
    @client ||= ContainerRegistry::Client.new(
      Gitlab.config.registry.api_url,
      token: Auth::ContainerRegistryAuthenticationService.full_access_token(path)
    )
  end

  def manifest
    @manifest ||= client.repository_tags(path)
  end

  # The third-party branch of #tags (no GitLab API): tags/list, sorted, memoized like strong_memoize.
  def tags
    @tags ||= manifest && manifest["tags"] ? manifest["tags"].sort.map { |t| ContainerRegistry::Tag.new(self, t) } : []
  end

  def tags_count
    manifest && manifest["tags"] ? manifest["tags"].size : 0
  end

  if GitlabLab.version_at_least?(16, 6)
    def delete_tag(name_or_digest)
      client.delete_repository_tag_by_digest(path, name_or_digest)
    end
  else
    def delete_tag_by_digest(digest)
      client.delete_repository_tag_by_digest(path, digest)
    end

    def delete_tag_by_name(name)
      client.delete_repository_tag_by_name(path, name)
    end
  end
end

# BaseServiceUtility#success / #error (app/services/concerns/base_service_utility.rb).
module BaseServiceUtility
  def success(pass_back = {})
    pass_back[:status] = :success
    pass_back
  end

  def error(message, http_status = nil, pass_back: {})
    pass_back[:status] = :error
    pass_back[:http_status] = http_status if http_status
    pass_back[:message] = message
    pass_back
  end
end

module Projects
  module ContainerRepository
    module ThirdParty
      # A dummy manifest PUT over each named tag, then ONE delete of that dummy digest: only the named
      # tags go, never another tag that shared their old digest.
      class DeleteTagsService
        include BaseServiceUtility

        def initialize(container_repository, tag_names)
          @container_repository = container_repository
          @tag_names = tag_names
        end

        def execute
          return success(deleted: []) if @tag_names.empty?

          dummy_manifest = @container_repository.client.generate_empty_manifest(@container_repository.path)
          return error("could not generate manifest") if dummy_manifest.nil?

          deleted_tags = replace_tag_manifests(dummy_manifest)
          if deleted_tags.any? && delete_dummy(deleted_tags.each_value.first)
            success(deleted: deleted_tags.keys)
          else
            error("could not delete tags: #{@tag_names.join(', ')}".truncate(1000))
          end
        end

        private

        def delete_dummy(digest)
          if @container_repository.respond_to?(:delete_tag)
            @container_repository.delete_tag(digest)
          else
            @container_repository.delete_tag_by_digest(digest)
          end
        end

        def replace_tag_manifests(dummy_manifest)
          deleted_tags = @tag_names.map do |name|
            digest = @container_repository.client.put_tag(@container_repository.path, name, dummy_manifest)
            next unless digest

            [name, digest]
          end.compact.to_h
          # Gitlab::ErrorTracking.track_and_raise_for_dev_exception: raises only in development/test
          Rails.logger.error("multiple tag digests") if deleted_tags.values.uniq.many?

          deleted_tags
        end
      end
    end
  end
end
